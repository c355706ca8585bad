-- Who relays each outbox stream: one holder at a time, until expires_ms (the database's
-- clock, so instances on machines with different clocks agree). epoch grows whenever the
-- lease changes hands; the relay records what it published only under its own epoch.
CREATE TABLE kit_relay_lease (
    stream TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
