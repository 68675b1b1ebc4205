"""The two implementations of `okvqa_k8s.kube.cluster.Cluster`: the Kubernetes API and local processes."""
