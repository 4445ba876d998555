"""The notifiers' own tables (`Store.migrate_part("notify", MIGRATIONS)`): append, never edit."""

MIGRATIONS = [
    # Webhooks: each group's current alerts, the groups' timing, and the notification log
    # (what the receiver acknowledged with 2xx, by delivery id).
    "CREATE TABLE notify_webhook_alert (receiver TEXT NOT NULL, group_key TEXT NOT NULL, "
    "fingerprint TEXT NOT NULL, tid INTEGER NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL, "
    "PRIMARY KEY (receiver, group_key, fingerprint));"
    "CREATE TABLE notify_webhook_group (receiver TEXT NOT NULL, group_key TEXT NOT NULL, "
    "group_labels TEXT NOT NULL, created REAL NOT NULL, next_flush REAL NOT NULL, "
    "last_sent REAL, sent_hash TEXT, seq INTEGER NOT NULL DEFAULT 0, "
    "attempts INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (receiver, group_key));"
    "CREATE TABLE notify_log (receiver TEXT NOT NULL, delivery TEXT NOT NULL, "
    "group_key TEXT NOT NULL, sent_at REAL NOT NULL, result TEXT NOT NULL, "
    "PRIMARY KEY (receiver, delivery));"
    # Alertmanager push: the alerts each Alertmanager is told of, until a resolve reached it.
    "CREATE TABLE notify_am_alert (am TEXT NOT NULL, fingerprint TEXT NOT NULL, "
    "tid INTEGER NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL, "
    "PRIMARY KEY (am, fingerprint))",
]
