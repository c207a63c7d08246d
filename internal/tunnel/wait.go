package tunnel

import "io"

// WaitRead blocks until a Read would return at once: the stream has bytes
// buffered, has reached end of stream, or has failed. It takes no buffer,
// so a copier can wait for an idle stream without holding one, and borrow
// a buffer only once there is something to read. On the edge side it
// first consumes the connector's reply, as the first Read does. It returns
// the error the next Read would return, or nil; that Read still returns
// it, so a caller may ignore it.
func (s *Stream) WaitRead() error {
	_, err := s.Read(nil)
	if err == io.EOF {
		return nil
	}
	return err
}
