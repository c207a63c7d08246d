package netpoll

import (
	"errors"
	"syscall"
)

// kernel is an epoll instance, and a pipe that wakes its waiter.
type kernel struct {
	fd     int    // the epoll instance
	wakeFD [2]int // the wake pipe: read end, write end
}

// wakeID is the event id of the wake pipe; sources' ids start after it.
const (
	wakeID  = 0
	firstID = wakeID + 1
)

// epollOneShot is EPOLLONESHOT, which package syscall spells as a
// negative int.
const epollOneShot = 1 << 30

func (k *kernel) init() error {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	if err := syscall.Pipe2(k.wakeFD[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		syscall.Close(fd)
		return err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: wakeID}
	if err := syscall.EpollCtl(fd, syscall.EPOLL_CTL_ADD, k.wakeFD[0], &ev); err != nil {
		syscall.Close(fd)
		syscall.Close(k.wakeFD[0])
		syscall.Close(k.wakeFD[1])
		return err
	}
	k.fd = fd
	return nil
}

func (k *kernel) close() error {
	return errors.Join(syscall.Close(k.fd), syscall.Close(k.wakeFD[0]), syscall.Close(k.wakeFD[1]))
}

// arm registers fd under id (add) or arms it again, one-shot, for
// readability or its end.
func (k *kernel) arm(fd int, id uint64, add bool) error {
	op := syscall.EPOLL_CTL_MOD
	if add {
		op = syscall.EPOLL_CTL_ADD
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollOneShot}
	ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
	return syscall.EpollCtl(k.fd, op, fd, &ev)
}

// remove takes fd out of the instance.
func (k *kernel) remove(fd int) {
	syscall.EpollCtl(k.fd, syscall.EPOLL_CTL_DEL, fd, nil)
}

// wake makes a wait return.
func (k *kernel) wake() { syscall.Write(k.wakeFD[1], []byte{1}) }

// wait waits for readiness and appends the ids of the ready sources to
// ids. A wake makes it return, perhaps with no id.
func (k *kernel) wait(ids []uint64) ([]uint64, error) {
	var events [128]syscall.EpollEvent
	n, err := syscall.EpollWait(k.fd, events[:], -1)
	if errors.Is(err, syscall.EINTR) {
		return ids, nil
	}
	if err != nil {
		return ids, err
	}
	for _, ev := range events[:n] {
		id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
		if id != wakeID {
			ids = append(ids, id)
			continue
		}
		var sink [64]byte
		for {
			if k, _ := syscall.Read(k.wakeFD[0], sink[:]); k <= 0 {
				break
			}
		}
	}
	return ids, nil
}
