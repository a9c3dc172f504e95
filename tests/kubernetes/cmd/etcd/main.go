// Command etcd is the etcd server, built from its Go module at the version go.mod pins, so that
// kubecert's tests run kube-apiserver on the same etcd a release of Kubernetes is tested with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
