"""GPU physics simulators (plain torch, batched, device-agnostic): phantoms, X-ray projection, MRI signal and k-space."""
