"""Tools for people working on okvqa-k8s (`okvqa-k8s dev`), not shipped behaviour of a run."""
