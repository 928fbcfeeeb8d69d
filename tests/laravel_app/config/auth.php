<?php

return [
    'defaults' => ['guard' => 'web'],
    'guards' => [
        // The page's session cookie.
        'web' => ['driver' => 'session', 'provider' => 'fixed'],
        // Laravel's token guard: `Authorization: Bearer <api_token>` (Echo's bearerToken).
        'api' => ['driver' => 'token', 'provider' => 'fixed', 'hash' => false],
    ],
    'providers' => [
        'fixed' => [
            'driver' => 'fixed',
            'users' => [
                1 => ['name' => 'Ayşe Yılmaz', 'is_admin' => true, 'api_token' => 'token-of-ayse'],
                2 => ['name' => 'Mehmet Demir', 'is_admin' => true, 'api_token' => 'token-of-mehmet'],
                3 => ['name' => 'Zeynep Kaya', 'is_admin' => false, 'api_token' => 'token-of-zeynep'],
            ],
        ],
    ],
];
