package broker

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// writeTimeoutListener gives every accepted connection a write deadline
// (writeTimeoutConn), so that a client that stops reading blocks no writer
// for longer than the timeout: not the acker, not mochi's own writes, which
// otherwise wait without end for a client with keep alive 0 and, for any
// other, for one and a half keep alives.
//
// It also bounds how long a connection may take to send its CONNECT: mochi
// waits for it without a deadline, so connections that never speak would
// pile up, two goroutines each.
type writeTimeoutListener struct {
	net.Listener
	timeout        time.Duration
	connectTimeout time.Duration
}

func (l writeTimeoutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	wc := &writeTimeoutConn{Conn: c, timeout: l.timeout, connectBy: time.Now().Add(l.connectTimeout)}
	c.SetReadDeadline(wc.connectBy)
	return wc, nil
}

// writeTimeoutConn owns its write deadline: SetDeadline (mochi's keep-alive
// deadline) sets only the read side, and each Write runs with at least
// three quarters of timeout ahead of it. The deadline is moved at most every
// quarter of timeout, so a busy connection pays almost nothing for it. A
// write that times out closes the connection: part of a packet may have
// gone out, so the stream cannot be trusted, and closing ends mochi's read
// loop, which disconnects the client (and sends its will).
type writeTimeoutConn struct {
	net.Conn
	timeout   time.Duration
	deadline  atomic.Int64 // unix ns of the write deadline in force
	connectBy time.Time    // the read deadline while mochi asks for none
}

func (c *writeTimeoutConn) Write(b []byte) (int, error) {
	now := time.Now()
	if now.UnixNano() > c.deadline.Load()-int64(c.timeout*3/4) {
		d := now.Add(c.timeout)
		if err := c.Conn.SetWriteDeadline(d); err != nil {
			return 0, err
		}
		c.deadline.Store(d.UnixNano())
	}
	n, err := c.Conn.Write(b)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.Conn.Close()
	}
	return n, err
}

// SetDeadline sets the read deadline only; writes keep their own. mochi
// asks for none (a zero time) only before the CONNECT, whose keep alive the
// hub never leaves at 0 (limitsHook): then the CONNECT deadline holds.
func (c *writeTimeoutConn) SetDeadline(t time.Time) error {
	if t.IsZero() {
		t = c.connectBy
	}
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline is ignored: writes keep their own deadline.
func (c *writeTimeoutConn) SetWriteDeadline(time.Time) error { return nil }
