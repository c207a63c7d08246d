//go:build !linux

package netpoll

import "errors"

// kernel: no poller on this platform; Open says so.
type kernel struct{}

const firstID = 1

func (*kernel) init() error                         { return errors.ErrUnsupported }
func (*kernel) close() error                        { return nil }
func (*kernel) arm(int, uint64, bool) error         { return errors.ErrUnsupported }
func (*kernel) remove(int)                          {}
func (*kernel) wake()                               {}
func (*kernel) wait(ids []uint64) ([]uint64, error) { return ids, errors.ErrUnsupported }
