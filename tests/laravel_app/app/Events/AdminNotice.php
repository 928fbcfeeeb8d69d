<?php

namespace App\Events;

use Illuminate\Broadcasting\InteractsWithSockets;
use Illuminate\Broadcasting\PrivateChannel;
use Illuminate\Contracts\Broadcasting\ShouldBroadcastNow;
use Illuminate\Foundation\Events\Dispatchable;

/** A notice for one admin's dashboard, broadcast at once (no queue). Public properties are
 * the payload, as Laravel serialises them without broadcastWith(). */
class AdminNotice implements ShouldBroadcastNow
{
    use Dispatchable, InteractsWithSockets;

    public function __construct(public int $adminId, public string $message, public array $meta = [])
    {
    }

    public function broadcastOn()
    {
        return new PrivateChannel('admin-dashboard.'.$this->adminId);
    }

    public function broadcastAs()
    {
        return 'admin.notice';
    }
}
