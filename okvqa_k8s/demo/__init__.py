"""`okvqa-k8s demo`: the whole product on one machine, with no GPU, no cluster and no download."""
