//! Programs that reuse the kubecert crates for something other than a kubelet.
//!
//! `mtls-client` (`src/bin/mtls-client.rs`) is another agent: an HTTPS client of the Kubernetes
//! API that obtains its own client certificate with a bootstrap token and keeps it fresh. It shows
//! the three pieces working together without the node agent: `kubecert-rotation`'s `Rotator`
//! decides when to renew, `kubecert-k8s`'s `CsrSource` obtains each certificate through a
//! CertificateSigningRequest, and `kubecert-reload`'s `LiveIdentity` and `kube_client` present the
//! newest certificate on new connections while requests keep flowing, none of them failing. The
//! certificate stays in memory; nothing is written to disk.
//!
//! This library is empty; the examples are the binaries, run by the package's tests against
//! `signer serve`.
