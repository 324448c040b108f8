"""Agency adapters: the publishing library and the transactional outbox adapter."""
