package hypervisor

import (
	"encoding/json"
	"fmt"
	"time"
)

// Fault reasons: evidence, from QEMU itself, that a guest cannot run. A guest that is only
// quiet has no fault: most operating systems print nothing anyone could check.
const (
	FaultPanicked = "GuestPanicked"
	FaultIOError  = "IOError"
)

// Fault is what QEMU reported about a guest that stopped running.
type Fault struct {
	Reason  string    `json:"reason"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// faultOf reads a QMP event as a fault, or returns nil for any other event.
func faultOf(ev Event) *Fault {
	at := ev.Timestamp
	if at.IsZero() {
		at = time.Now()
	}
	switch ev.Name {
	case "GUEST_PANICKED":
		var d struct {
			Action string `json:"action"`
			Info   *struct {
				Type string `json:"type"`
				// hyper-v and s390 carry registers; the x86 pvpanic carries nothing more.
			} `json:"info"`
		}
		json.Unmarshal(ev.Data, &d)
		msg := "the guest's kernel panicked (QEMU event GUEST_PANICKED"
		if d.Action != "" {
			msg += ", action " + d.Action
		}
		return &Fault{Reason: FaultPanicked, Message: msg + ")", At: at}
	case "BLOCK_IO_ERROR":
		var d struct {
			Device    string `json:"device"`
			NodeName  string `json:"node-name"`
			Operation string `json:"operation"`
			Action    string `json:"action"`
			NoSpace   bool   `json:"nospace"`
			Reason    string `json:"reason"`
		}
		json.Unmarshal(ev.Data, &d)
		if d.Action != "stop" {
			return nil // reported to the guest or ignored: the guest runs on
		}
		dev := d.Device
		if dev == "" {
			dev = d.NodeName
		}
		msg := fmt.Sprintf("QEMU paused the guest on a %s error of disk %s", d.Operation, dev)
		if d.NoSpace {
			msg += ": no space left on the storage"
		} else if d.Reason != "" {
			msg += ": " + d.Reason
		}
		return &Fault{Reason: FaultIOError, Message: msg, At: at}
	}
	return nil
}
