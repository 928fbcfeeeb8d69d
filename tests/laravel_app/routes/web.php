<?php

use App\Events\AdminNotice;
use App\Events\LeadAssigned;
use Illuminate\Http\Request;
use Illuminate\Support\Facades\Auth;
use Illuminate\Support\Facades\Route;

// What a page knows of its session: the CSRF token of its <meta name="csrf-token"> and, for
// the tests, the session id the app will find again on /broadcasting/auth.
function page(Request $request): array
{
    return ['csrf' => csrf_token(), 'session' => $request->session()->getId(),
            'user' => Auth::id()];
}

// A guest's page.
Route::get('/page', fn (Request $request) => page($request));

// Logging in (no password: the users are fixed, and this app only ever runs in the tests).
Route::post('/login/{id}', function (Request $request, int $id) {
    Auth::loginUsingId($id);

    return page($request);
});

// The app dispatching events while handling a page's request (CSRF-checked POSTs, as from
// axios): `to_others` is broadcast(...)->toOthers(), which excludes the X-Socket-ID tab.
function dispatch_broadcast(Request $request, object $event)
{
    $pending = broadcast($event);
    if ($request->boolean('to_others')) {
        $pending->toOthers();
    }
}

Route::post('/leads/assign', function (Request $request) {
    $admin = fn (?int $id) => $id === null ? null : [
        'id' => $id, 'name' => config("auth.providers.fixed.users.$id.name"),
    ];
    dispatch_broadcast($request, new LeadAssigned($request->input('lead'), $admin($request->input('new_admin')),
        $admin($request->input('old_admin')), $admin(Auth::id())));

    return ['dispatched' => 'lead.assigned'];
});

Route::post('/admins/{id}/notice', function (Request $request, int $id) {
    dispatch_broadcast($request, new AdminNotice($id, $request->input('message'), $request->input('meta', [])));

    return ['dispatched' => 'admin.notice'];
});
