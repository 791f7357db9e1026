// Command etcd is etcd's own server entry point: the etcd module ships its main package
// in a separate module path that pins its own dependencies, so the rig wraps the
// library entry point instead.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
