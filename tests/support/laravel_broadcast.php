<?php
// The golden bytes of tests/test_publisher.py, as PHP writes them: Laravel's broadcasting minus
// the framework. BroadcastEvent::getPayloadFromEvent() merges 'socket' into broadcastWith();
// RedisBroadcaster::broadcast() then publishes
//   json_encode(['event' => $event, 'data' => $payload, 'socket' => Arr::pull($payload, 'socket')])
// (no flags: escaped slashes, \u escapes, 30.0 written as 30). Run: php laravel_broadcast.php
function arr_pull(array &$a, string $k) { $v = $a[$k] ?? null; unset($a[$k]); return $v; }
function laravel(string $event, array $with, ?string $socket): string {
    $payload = array_merge($with, ['socket' => $socket]);
    return json_encode(['event' => $event, 'data' => $payload, 'socket' => arr_pull($payload, 'socket')]);
}
function admin(int $id, string $name): array {
    return ['id' => $id, 'name' => $name, 'email' => "admin$id@example.com",
            'leads_assigned_count' => 12, 'max_leads_per_day' => 40];
}

// 1. A sample exercising the encoder.
echo laravel('lead.assigned', [
    'lead' => ['id' => 42, 'name' => 'Zeynep Kaya', 'url' => 'https://crm.example.com/leads/42'],
    'message' => "Lead Ayşe Yılmaz adlı admin'e atandı 🎯",
    'percentage' => round((12 / 40) * 100, 1),
    'ratio' => 0.1 + 0.2,
    'tags' => [],
    'active' => true,
    'note' => null,
], '1234.5678'), "\n";

// 2. LeadAssigned::broadcastWith() (a reassignment), resources as arrays.
$new = admin(5, 'Ayşe Yılmaz'); $old = admin(3, 'Mehmet Demir'); $by = admin(1, 'Süper Admin');
$lead = ['id' => 42, 'name' => 'Zeynep Kaya', 'phone' => '+90 555 000 0000',
         'lead_status' => ['id' => 1, 'name' => 'Yeni'], 'assigned_admin' => $new];
$ts = '2026-11-25T10:00:00.000000Z';
echo laravel('lead.assigned', [
    'lead' => $lead,
    'assignment' => ['new_admin' => $new, 'old_admin' => $old, 'assigned_by' => $by,
                     'timestamp' => $ts, 'type' => $old ? 'reassignment' : 'initial_assignment'],
    'notification' => [
        'title' => $new ? "Yeni lead atandı: {$lead['name']}" : "Lead ataması kaldırıldı: {$lead['name']}",
        'message' => $new ? "Lead {$new['name']} adlı admin'e atandı" : "Lead'in ataması kaldırıldı",
        'type' => 'assignment', 'priority' => 'normal'],
], null), "\n";

// 3. AdminCapacityUpdated::broadcastWith().
$max = $new['max_leads_per_day']; $cur = $new['leads_assigned_count'];
echo laravel('admin.capacity.updated', [
    'admin' => $new, 'capacity_change' => 1,
    'new_capacity' => ['current' => $cur, 'max' => $max, 'available' => max(0, $max - $cur),
                       'percentage' => $max ? round(($cur / $max) * 100, 1) : 0],
    'timestamp' => $ts,
], '1234.5678'), "\n";
