"""Operations: Kafka ACL plans (``infra.acl``); compose files, Prometheus and Grafana config."""
