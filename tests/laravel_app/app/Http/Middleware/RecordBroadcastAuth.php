<?php

namespace App\Http\Middleware;

use Closure;
use Illuminate\Http\Request;

/**
 * The app's own record of whom it authenticated on /broadcasting/auth: one JSON line per
 * request in storage/broadcast-auth.log, read by the tests. It runs inside the `web` group,
 * after the broadcaster answered, so it sees the session and the guards as the answer did.
 */
class RecordBroadcastAuth
{
    public function handle(Request $request, Closure $next)
    {
        $response = $next($request);
        $record = [
            'channel' => $request->input('channel_name'),
            'socket_id' => $request->input('socket_id'),
            'status' => $response->getStatusCode(),
            'session_user' => $request->user('web')?->getAuthIdentifier(),
            'token_user' => $request->user('api')?->getAuthIdentifier(),
            'session' => $request->hasSession() ? $request->session()->getId() : null,
            'had_session_cookie' => $request->cookies->has(config('session.cookie')),
            'csrf_token_matches' => $request->hasSession()
                && hash_equals((string) $request->session()->token(), (string) $request->header('X-CSRF-TOKEN')),
            'x_socket_id' => $request->header('X-Socket-ID'),
        ];
        file_put_contents(storage_path('broadcast-auth.log'), json_encode($record)."\n", FILE_APPEND | LOCK_EX);

        return $response;
    }
}
