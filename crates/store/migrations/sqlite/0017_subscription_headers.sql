-- Subscriptions: headers added to every request (a JSON list of {name, value}; a value may name a
-- secret as {{secret.NAME}}), for OTLP exporters that authenticate by header. An `otlp`
-- subscription may have no signing secret: its secret_name is then empty.
ALTER TABLE subscriptions ADD COLUMN headers TEXT NOT NULL DEFAULT '[]';
