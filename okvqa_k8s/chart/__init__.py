"""The Helm chart's generated files (`okvqa-k8s chart generate`) and where to find the chart."""
