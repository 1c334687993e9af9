"""The Kubernetes operator: certificates, the managed server, vehicle configuration."""
