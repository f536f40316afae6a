-- The admin pages ask each signed source for its latest event: an index on the source, newest
-- first, over the events that came through one (most did not, and stay out of it).
CREATE INDEX events_source_received ON events(source_id, received_at DESC, id DESC) WHERE source_id IS NOT NULL;
