"""The control plane's engine: what a reconcile pass reads, decides and does, who runs it and when, and the plans it hands nodes."""
