// Package wanlink emulates a wide-area link between two throwaway hosts
// (Linux network namespaces), for the benchmark (`sallyport bench --wan
// RTT[,loss][,rate]`) and for tests: a round-trip time, a random loss
// and a rate, each way.
//
//	far 198.19.1.2 ── 198.19.1.1 router 198.19.2.1 ── 198.19.2.2 site
//	clients, the edge                          the connector, back-ends
//
// This machine's kernel has no netem, so the router does it with what it
// has. Policy routing sends every packet that arrives from far into one
// TUN device and every packet from site into another. A token bucket
// (tc tbf) limits each TUN device's queue to the rate, with one
// bandwidth-delay product of buffer, as a router's queue in front of a
// slow link. A delayer, two goroutines of this process per direction,
// reads each packet from its TUN device, holds it in a bounded ring of
// bytes for half the round-trip time, drops the lost fraction, and
// writes the rest back, from where the router's main table sends it out
// of the other side. The TUN devices take TCP super-packets of up to
// 64 KiB whole (IFF_VNET_HDR with TCP segmentation offload), which is
// what lets one core carry 1 Gbit/s; the loss still drops single
// segments, cutting a super-packet around them. docs/decisions.md has
// the measurements behind this.
//
// Far and site may grow TCP buffers to TCPBufferMax, as hosts tuned for
// a long fat network, and keep the host's congestion control
// (net.ipv4.tcp_congestion_control).
//
// The bench uses it like this (as root):
//
//	spec, err := wanlink.ParseSpec("50ms,1%,1gbit")
//	wanlink.RemoveStale(log.Printf)   // what a killed run left behind
//	link, err := wanlink.Start(spec)
//	defer link.Close()                // kills what runs in the namespaces, removes them
//	edge := link.Far.Command(ctx, exe, "edge", ...)  // start with childproc.Start
//	conn, err := link.Far.Dial(ctx, "tcp", wanlink.SiteAddr+":5201")
//	ln, err := link.Site.Listen("tcp", wanlink.SiteAddr+":0")
//	err = link.Far.Do(func() error { ... })  // sockets made here live in far
//	toSite, toFar := link.Stats()     // lost, cut, buffer-full packets
package wanlink
