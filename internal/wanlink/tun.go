//go:build linux

package wanlink

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Offloads a TUN device can take (linux/if_tun.h), which x/sys/unix lacks.
const (
	tunFCsum = 0x01 // TUN_F_CSUM: packets may leave their checksum to be filled in
	tunFTSO4 = 0x02 // TUN_F_TSO4: TCP over IPv4 segmentation offload
)

// openTUN creates TUN device name in the calling thread's network
// namespace (the caller runs it through nsenter.Do) and returns its file,
// non-blocking so that Go's poller serves it and Close ends a pending
// Read. Each packet read or written starts with a virtio_net_hdr, and the
// device takes TCP/IPv4 super-packets of up to 64 KiB (GSO) whole, as
// wireguard-go's TUN does: one read and one write carry up to 44
// segments.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUN device name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create TUN device %s: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUN device %s: set offloads: %w", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUN device %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}
