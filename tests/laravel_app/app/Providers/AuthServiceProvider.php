<?php

namespace App\Providers;

use App\Auth\FixedUserProvider;
use Illuminate\Support\Facades\Auth;
use Illuminate\Support\ServiceProvider;

class AuthServiceProvider extends ServiceProvider
{
    public function boot()
    {
        Auth::provider('fixed', fn ($app, array $config) => new FixedUserProvider($config['users']));
    }
}
