-- The dispatcher claims each subscription's own oldest due deliveries (fair between subscribers).
CREATE INDEX deliveries_due_per_subscription ON deliveries (subscription_id, next_attempt_at)
    WHERE status = 'pending';
-- Delivery statuses: pending, delivered, dead, cancelled (the subscription was removed).
