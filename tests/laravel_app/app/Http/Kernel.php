<?php

namespace App\Http;

use Illuminate\Foundation\Http\Kernel as HttpKernel;

class Kernel extends HttpKernel
{
    protected $middleware = [];

    protected $middlewareGroups = [
        // What a new Laravel 8 app's `web` group does for /broadcasting/auth: cookies
        // decrypted, a session started (and its cookie set on every answer), CSRF verified
        // (Broadcast::routes() exempts its own route from it, as in every Laravel app).
        'web' => [
            \Illuminate\Cookie\Middleware\EncryptCookies::class,
            \Illuminate\Cookie\Middleware\AddQueuedCookiesToResponse::class,
            \Illuminate\Session\Middleware\StartSession::class,
            \Illuminate\Foundation\Http\Middleware\VerifyCsrfToken::class,
            \Illuminate\Routing\Middleware\SubstituteBindings::class,
        ],
    ];

    protected $routeMiddleware = [
        'record-auth' => \App\Http\Middleware\RecordBroadcastAuth::class,
    ];
}
