package disk

import "fmt"

// Adopt takes over the disk an earlier process of this daemon mounted at dir
// (live restore: the runtime kept running across the restart). It returns
// nil and no error when dir is not a mount point (the runtime had no disk:
// DiskLimit was 0), and refuses (ErrNotDisk) a mount this package did not
// make, as Unmount does.
func Adopt(dir string) (*Disk, error) {
	dev, err := mountedDisk(dir)
	if err != nil {
		return nil, fmt.Errorf("disk: adopt %s: %w", dir, err)
	}
	if dev == 0 {
		return nil, nil
	}
	return &Disk{dir: dir, dev: dev}, nil
}
