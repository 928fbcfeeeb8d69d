<?php

use Illuminate\Support\Facades\Broadcast;

// Both guards: a page's session (web), or Echo's bearerToken (api, the token guard).
$guards = ['guards' => ['web', 'api']];

// An admin's own dashboard.
Broadcast::channel('admin-dashboard.{id}', function ($user, $id) {
    return (int) $user->id === (int) $id && $user->is_admin;
}, $guards);

// Who of the admins is online: what the callback returns is the member's user_info.
Broadcast::channel('online-admins', function ($user) {
    return $user->is_admin ? ['id' => $user->id, 'name' => $user->name] : false;
}, $guards);
