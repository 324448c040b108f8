-- Notices (the `notifications` rows the control plane writes for an agency: a request filed
-- against it, a decision, a revoked grant; Art. 18) are acknowledged by their recipient, once:
-- `acknowledged_at` is set by the recipient's `govbus notices ack` (or POST
-- /v1/notices/{id}/ack) and never cleared. Unread = not acknowledged.
ALTER TABLE notifications ADD COLUMN acknowledged_at timestamptz;
CREATE INDEX notifications_agency ON notifications (agency, notification_id);
CREATE INDEX notifications_unread ON notifications (agency, notification_id)
    WHERE acknowledged_at IS NULL;
