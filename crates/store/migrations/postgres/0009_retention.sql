-- Retention: the periodic pruning of old raw events and finished deliveries finds its rows by
-- age across tenants, and a message is removed once no delivery refers to it.
CREATE INDEX events_received ON events(received_at);
CREATE INDEX deliveries_finished ON deliveries((COALESCE(last_attempt_at, created_at))) WHERE status <> 'pending';
CREATE INDEX deliveries_message ON deliveries(message_id);
CREATE INDEX outbound_messages_created ON outbound_messages(created_at);
