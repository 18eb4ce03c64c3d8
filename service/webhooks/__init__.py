"""Webhooks (SPEC 2.7, Standard Webhooks v1.0.0): subscriptions, the transactional outbox, the
delivery worker, and the egress checks every delivery goes through."""
