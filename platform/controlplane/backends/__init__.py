"""The control plane's two backends behind one interface (`base.Backend`)."""
