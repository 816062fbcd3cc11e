package storage

import (
	"fmt"
	"io"
	"os"
)

// checkBootSector tells whether a raw image starts with a BIOS boot signature (0x55AA at
// offset 510), as every disk a BIOS can boot does.
func checkBootSector(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 512)
	if _, err := io.ReadFull(f, buf); err != nil {
		return fmt.Errorf("the image is smaller than one disk sector: not a disk image")
	}
	if buf[510] != 0x55 || buf[511] != 0xAA {
		return fmt.Errorf("the image has no boot sector (no 0x55AA signature): not a bootable raw disk; use a raw disk image or qcow2")
	}
	return nil
}
