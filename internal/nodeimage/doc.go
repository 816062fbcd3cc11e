// Package nodeimage builds Ferry's container image for real Kubernetes nodes without
// Docker or a registry: what deploy/image/Dockerfile describes (Debian 12, qemu-system-x86,
// qemu-utils, ca-certificates, /usr/local/bin/ferry, ferry-agent and ferry-launcher, entrypoint
// ferry),
// as an OCI image-layout tar that `ctr -n k8s.io images import` loads.
//
//   - EnsureBase: the Debian root filesystem with QEMU, from debootstrap and apt in a
//     chroot (the embedded build-node-base.sh), tarred as one uncompressed layer and
//     cached in /var/cache/ferry/images under the script's hash with its digest beside it;
//   - Write: the image-layout tar of that layer and a layer holding the ferry, ferry-agent
//     and ferry-launcher binaries (the only part hashed on each write);
//   - Import: `ctr images import` into a containerd's k8s.io namespace, checked.
//
// `make node-image` writes bin/ferry-image.tar from bin/ferry, bin/ferry-agent and
// bin/ferry-launcher.
package nodeimage
