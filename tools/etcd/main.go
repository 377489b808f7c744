// Command etcd is upstream etcd's server main, built in our own module so that
// the replace directives in go.etcd.io/etcd/server/v3's go.mod are ignored
// (`go install go.etcd.io/etcd/server/v3@v3.6.x` refuses them, etcd-io/etcd#18501).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
