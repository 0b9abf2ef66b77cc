"""The kubepam web console: server-rendered pages for people (my access, requests, approvals, shared
accounts, history, workload connections), acting only with each person's own Kubernetes token."""
