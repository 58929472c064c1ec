package disk

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	loopControl = "/dev/loop-control"
	// loopMajor is the block major of every loop device (LOOP_MAJOR).
	loopMajor = 7
	// loopMark is written into each device's lo_file_name: Unmount(dir)
	// acts on a leftover mount only when its device carries it.
	loopMark = "executor/sandbox/disk"
	// loopAttempts bounds the retries when other processes keep taking the
	// free device first.
	loopAttempts = 64
)

type loopDevice struct {
	fd   int
	path string
	rdev uint64
}

// attachLoop binds backing to a free loop device, with autoclear and, where
// the backing filesystem allows it, direct I/O (the backing file's pages
// would otherwise sit in the page cache twice: once as the disk's files,
// once as the file's). The caller must close fd.
func attachLoop(backing *os.File) (loopDevice, error) {
	ctl, err := unix.Open(loopControl, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return loopDevice{}, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	defer unix.Close(ctl)

	cfg := unix.LoopConfig{
		Fd:   uint32(backing.Fd()),
		Size: blockSize,
		Info: unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO},
	}
	copy(cfg.Info.File_name[:], loopMark)
	var lastErr error
	for range loopAttempts {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return loopDevice{}, fmt.Errorf("get a free loop device: %w", err)
		}
		path := "/dev/loop" + strconv.Itoa(n)
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO) {
			// Removed (LOOP_CTL_REMOVE) by another process since GET_FREE,
			// or its node not made yet: ask again.
			lastErr = err
			continue
		}
		if err != nil {
			return loopDevice{}, err
		}
		err = unix.IoctlLoopConfigure(fd, &cfg)
		if errors.Is(err, unix.EINVAL) && cfg.Info.Flags&unix.LO_FLAGS_DIRECT_IO != 0 {
			// Some kernels refuse direct I/O where the backing file's
			// filesystem lacks it rather than falling back: do without.
			cfg.Info.Flags &^= unix.LO_FLAGS_DIRECT_IO
			err = unix.IoctlLoopConfigure(fd, &cfg)
		}
		if errors.Is(err, unix.EBUSY) {
			// Another process bound it between GET_FREE and here.
			unix.Close(fd)
			lastErr = err
			continue
		}
		if err != nil {
			unix.Close(fd)
			return loopDevice{}, fmt.Errorf("configure %s: %w", path, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd) // autoclear frees the device
			return loopDevice{}, err
		}
		return loopDevice{fd: fd, path: path, rdev: st.Rdev}, nil
	}
	return loopDevice{}, fmt.Errorf("no free loop device after %d attempts: %w", loopAttempts, lastErr)
}

// checkLoopMark makes sure dev is a loop device that attachLoop configured.
func checkLoopMark(dev uint64) error {
	if unix.Major(dev) != loopMajor {
		return fmt.Errorf("device %d:%d is not a loop device: %w", unix.Major(dev), unix.Minor(dev), ErrNotDisk)
	}
	// The device's name (loopN) from sysfs: minors are not loop numbers when
	// the loop module was loaded with max_part.
	link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev)))
	if err != nil {
		return err
	}
	name := filepath.Base(link)
	if !strings.HasPrefix(name, "loop") {
		return fmt.Errorf("device %s: %w", name, ErrNotDisk)
	}
	fd, err := unix.Open("/dev/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Rdev != dev {
		return fmt.Errorf("/dev/%s is not device %d:%d: %w", name, unix.Major(dev), unix.Minor(dev), ErrNotDisk)
	}
	info, err := unix.IoctlLoopGetStatus64(fd)
	if err != nil {
		return fmt.Errorf("/dev/%s: %w", name, err)
	}
	if got := string(bytes.TrimRight(info.File_name[:], "\x00")); got != loopMark {
		return fmt.Errorf("/dev/%s is bound to %q: %w", name, got, ErrNotDisk)
	}
	return nil
}
