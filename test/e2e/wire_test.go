package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// wire records, by TCP flow, what this host's network interfaces carry (an AF_PACKET socket
// on all of them: the nodes' veths and loopback; needs root). It tells what a migration
// stream looks like to someone on the network.
type wire struct {
	fd    int
	done  chan struct{}
	ended chan struct{}
	mu    sync.Mutex
	flows map[string]*flowSeen // "SRC:PORT>DST:PORT"
}

type flowSeen struct {
	Src, Dst string
	// First is the start of the first segment with data.
	First []byte
	Bytes int64
	// Plain is set when QEMU's migration stream header (magic "QEVM", version 3) was seen.
	Plain bool
}

// qemuStreamHeader opens every unencrypted QEMU migration stream.
var qemuStreamHeader = []byte("QEVM\x00\x00\x00\x03")

func sniff(t *testing.T) *wire {
	t.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatalf("packet socket (the test needs root): %v", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	w := &wire{fd: fd, done: make(chan struct{}), ended: make(chan struct{}), flows: map[string]*flowSeen{}}
	go w.read()
	t.Cleanup(w.stop)
	return w
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (w *wire) read() {
	defer close(w.ended)
	buf := make([]byte, 1<<17)
	for {
		select {
		case <-w.done:
			return
		default:
		}
		n, _, err := unix.Recvfrom(w.fd, buf, 0)
		if err != nil {
			continue // the timeout: look at done again
		}
		w.record(buf[:n])
	}
}

// record notes one IPv4 TCP packet.
func (w *wire) record(p []byte) {
	if len(p) < 20 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_TCP {
		return
	}
	ihl := int(p[0]&0x0f) * 4
	end := int(binary.BigEndian.Uint16(p[2:4]))
	if end == 0 || end > len(p) {
		end = len(p) // segmentation offload: the length field may be unset
	}
	if end < ihl+20 {
		return
	}
	tcp := p[ihl:end]
	doff := int(tcp[12]>>4) * 4
	if doff > len(tcp) {
		return
	}
	data := tcp[doff:]
	if len(data) == 0 {
		return
	}
	src := fmt.Sprintf("%s:%d", net.IP(p[12:16]), binary.BigEndian.Uint16(tcp[0:2]))
	dst := fmt.Sprintf("%s:%d", net.IP(p[16:20]), binary.BigEndian.Uint16(tcp[2:4]))
	w.mu.Lock()
	defer w.mu.Unlock()
	f := w.flows[src+">"+dst]
	if f == nil {
		f = &flowSeen{Src: src, Dst: dst, First: append([]byte(nil), data[:min(len(data), 16)]...)}
		w.flows[src+">"+dst] = f
	}
	f.Bytes += int64(len(data))
	f.Plain = f.Plain || bytes.Contains(data, qemuStreamHeader)
}

func (w *wire) stop() {
	select {
	case <-w.done:
		return
	default:
	}
	close(w.done)
	<-w.ended
	unix.Close(w.fd)
}

// flowsTo returns the flows to or from addr (IP:PORT).
func (w *wire) flowsTo(addr string) []flowSeen {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []flowSeen
	for _, f := range w.flows {
		if f.Dst == addr || f.Src == addr {
			out = append(out, *f)
		}
	}
	return out
}
