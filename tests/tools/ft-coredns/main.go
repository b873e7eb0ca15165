// Command ft-coredns is the cluster DNS of the test control plane: upstream CoreDNS v1.15.0
// (github.com/coredns/coredns, no forks, no replace directives) built with only the plugins a
// cluster's DNS needs here, the way CoreDNS documents custom builds (set dnsserver.Directives,
// import the plugins, call coremain.Run). Leaving out the cloud and tracing plugins keeps the
// cold build short enough for CI. It takes the same flags as the upstream binary
// (-conf Corefile, -version).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// directives is the plugin chain, in the order of upstream's plugin.cfg (order decides which
// plugin sees a query first).
var directives = []string{
	"bind",
	"ready",
	"errors",
	"log",
	"kubernetes",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
