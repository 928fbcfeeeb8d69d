<?php

namespace App\Auth;

use Illuminate\Auth\GenericUser;
use Illuminate\Contracts\Auth\Authenticatable;
use Illuminate\Contracts\Auth\UserProvider;

/** Users from config('auth.providers.fixed.users'): no database. */
class FixedUserProvider implements UserProvider
{
    public function __construct(private array $users)
    {
    }

    private function user(int|string $id): ?GenericUser
    {
        $attributes = $this->users[$id] ?? null;

        return $attributes === null ? null : new GenericUser(['id' => (int) $id] + $attributes);
    }

    public function retrieveById($identifier)
    {
        return $this->user($identifier);
    }

    public function retrieveByToken($identifier, $token)
    {
        return null;  // no "remember me"
    }

    public function updateRememberToken(Authenticatable $user, $token)
    {
    }

    public function retrieveByCredentials(array $credentials)
    {
        // The token guard asks for ['api_token' => <bearer token>].
        foreach ($this->users as $id => $attributes) {
            if (isset($credentials['api_token']) && hash_equals($attributes['api_token'], (string) $credentials['api_token'])) {
                return $this->user($id);
            }
        }

        return null;
    }

    public function validateCredentials(Authenticatable $user, array $credentials)
    {
        return false;  // nobody logs in with a password here
    }
}
