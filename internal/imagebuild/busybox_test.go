package imagebuild_test

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/flotilla-io/flotilla/internal/imagebuild"
)

// layerEntries reads the one layer of img: headers by name, and contents.
func layerEntries(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string]string) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d (%v), want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	hdrs, data := map[string]*tar.Header{}, map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs, data
		}
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name] = h
		b, _ := io.ReadAll(tr)
		data[h.Name] = string(b)
	}
}

func TestBusyboxImage(t *testing.T) {
	img, err := imagebuild.BusyboxImage([]byte("busybox-binary"), []string{"busybox", "sh", "grep", "../evil"})
	if err != nil {
		t.Fatal(err)
	}
	hdrs, data := layerEntries(t, img)
	if h := hdrs["bin/busybox"]; h == nil || h.Mode != 0o755 || data["bin/busybox"] != "busybox-binary" {
		t.Errorf("bin/busybox = %+v", h)
	}
	for _, a := range []string{"sh", "grep"} {
		if h := hdrs["bin/"+a]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
			t.Errorf("bin/%s = %+v, want a symlink to busybox", a, h)
		}
	}
	for name := range hdrs {
		if strings.Contains(name, "..") {
			t.Errorf("entry %q escapes /bin", name)
		}
	}
	if !strings.Contains(data["etc/passwd"], "app:x:1000:1000:") || !strings.Contains(data["etc/group"], "extra:x:2000:app") {
		t.Errorf("passwd %q, group %q", data["etc/passwd"], data["etc/group"])
	}
	if h := hdrs["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("tmp/ = %+v", h)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Cmd, []string{"/bin/sh"}) || len(cf.Config.Entrypoint) != 0 {
		t.Errorf("entrypoint %q, cmd %q; want cmd /bin/sh", cf.Config.Entrypoint, cf.Config.Cmd)
	}
	if _, err := imagebuild.BusyboxImage([]byte("x"), []string{"ls"}); err == nil {
		t.Error("an image without sh was built")
	}
}

func TestBuildBusybox(t *testing.T) {
	if _, err := os.Stat(imagebuild.BusyboxPath); err != nil {
		t.Skipf("%s: %v (Debian: apt-get install busybox-static)", imagebuild.BusyboxPath, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	img, err := imagebuild.BuildBusybox(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	hdrs, _ := layerEntries(t, img)
	for _, a := range []string{"sh", "grep", "cat", "insmod", "unshare", "sleep", "touch", "id"} {
		if hdrs["bin/"+a] == nil {
			t.Errorf("no /bin/%s", a)
		}
	}
	// A dynamically linked binary would not run in the image.
	if _, err := imagebuild.BuildBusybox(ctx, "/bin/ls"); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("BuildBusybox(/bin/ls) = %v, want it refused as dynamically linked", err)
	}
}
