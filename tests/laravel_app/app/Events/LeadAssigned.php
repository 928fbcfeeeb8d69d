<?php

namespace App\Events;

use Illuminate\Broadcasting\Channel;
use Illuminate\Broadcasting\InteractsWithSockets;
use Illuminate\Broadcasting\PrivateChannel;
use Illuminate\Contracts\Broadcasting\ShouldBroadcast;
use Illuminate\Foundation\Events\Dispatchable;

/**
 * The seed's lead assignment: queued (ShouldBroadcast, on QUEUE_CONNECTION=sync) to the
 * public leads-management channel and the new admin's private dashboard.
 */
class LeadAssigned implements ShouldBroadcast
{
    use Dispatchable, InteractsWithSockets;

    public function __construct(public array $lead, public array $newAdmin, public ?array $oldAdmin,
                                public ?array $assignedBy)
    {
    }

    public function broadcastOn()
    {
        return [
            new Channel('leads-management'),
            new PrivateChannel('admin-dashboard.'.$this->newAdmin['id']),
        ];
    }

    public function broadcastAs()
    {
        return 'lead.assigned';
    }

    public function broadcastWith()
    {
        return [
            'lead' => $this->lead,
            'assignment' => [
                'new_admin' => $this->newAdmin,
                'old_admin' => $this->oldAdmin,
                'assigned_by' => $this->assignedBy,
                'timestamp' => now()->toISOString(),
                'type' => $this->oldAdmin ? 'reassignment' : 'initial_assignment',
            ],
            'notification' => [
                'title' => "Yeni lead atandı: {$this->lead['name']}",
                'message' => "Lead {$this->newAdmin['name']} adlı admin'e atandı",
                'type' => 'assignment',
                'priority' => 'normal',
            ],
        ];
    }
}
