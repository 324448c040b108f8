"""Operations: Kafka ACL plans (``govbus.infra.acl``); compose files, Prometheus and Grafana
config."""
