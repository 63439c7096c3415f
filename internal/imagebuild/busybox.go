package imagebuild

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BusyboxPath is where Debian's busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

// Users of the busybox image's /etc/passwd and /etc/group: tests run
// containers as BusyboxUID to see the primary group (BusyboxGID) and the
// supplementary one (BusyboxExtraGID) the image gives it.
const (
	BusyboxUID      = 1000
	BusyboxGID      = 1000
	BusyboxExtraGID = 2000
)

// BuildBusybox packs the busybox binary at path (BusyboxPath if "") into
// an image with a shell, for tests that need one in a container. The
// binary must be statically linked: the image holds nothing else. Its
// applets come from the binary itself (busybox --list).
func BuildBusybox(ctx context.Context, path string) (v1.Image, error) {
	if path == "" {
		path = BusyboxPath
	}
	if err := checkStatic(path); err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, path, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list the applets of %s: %w", path, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return BusyboxImage(b, strings.Fields(string(out)))
}

// checkStatic refuses a missing or dynamically linked binary, saying what to install.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w; install a static busybox (Debian: apt-get install busybox-static)", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the image needs a static busybox (Debian: apt-get install busybox-static)", path)
		}
	}
	return nil
}

// BusyboxImage packs a static busybox into a linux/amd64 image: /bin/busybox,
// a symlink in /bin for each applet, /tmp (1777), /home/app, and an
// /etc/passwd and /etc/group with root, app (BusyboxUID:BusyboxGID, also
// in group extra, BusyboxExtraGID) and nobody. Cmd is ["/bin/sh"]. The
// result is reproducible: timestamps are zero.
func BusyboxImage(binary []byte, applets []string) (v1.Image, error) {
	if !slices.Contains(applets, "sh") {
		return nil, errors.New("busybox image: the binary has no sh applet; the image would have no shell")
	}
	files := []file{
		{name: "bin/", mode: 0o755},
		{name: "bin/busybox", mode: 0o755, data: binary},
		{name: "etc/", mode: 0o755},
		{name: "etc/passwd", mode: 0o644, data: []byte(fmt.Sprintf(
			"root:x:0:0:root:/root:/bin/sh\napp:x:%d:%d:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
			BusyboxUID, BusyboxGID))},
		{name: "etc/group", mode: 0o644, data: []byte(fmt.Sprintf(
			"root:x:0:\napp:x:%d:\nextra:x:%d:app\nnogroup:x:65534:\n", BusyboxGID, BusyboxExtraGID))},
		{name: "home/", mode: 0o755},
		{name: "home/app/", mode: 0o755, uid: BusyboxUID, gid: BusyboxGID},
		{name: "root/", mode: 0o700},
		{name: "tmp/", mode: 0o1777},
	}
	for _, a := range applets {
		if a == "busybox" || a == "" || strings.ContainsAny(a, "/\x00") {
			continue
		}
		files = append(files, file{name: path.Join("bin", a), link: "busybox"})
	}
	layerTar, err := tarFiles(files)
	if err != nil {
		return nil, err
	}
	return oneLayerImage(layerTar, func(c *v1.Config) {
		c.Cmd = []string{"/bin/sh"}
		c.Env = []string{"PATH=/bin"}
	})
}
