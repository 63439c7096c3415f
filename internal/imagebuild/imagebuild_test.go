package imagebuild_test

import (
	"archive/tar"
	"context"
	"io"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/flotilla-io/flotilla/internal/imagebuild"
)

func TestBuildDemoImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the demo app with go build")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img, err := imagebuild.BuildDemo(ctx, "", "v7")
	if err != nil {
		t.Fatal(err)
	}

	// Round-trip through a docker-save tarball, as the runtime will read it.
	path := filepath.Join(t.TempDir(), "demo.tar")
	const tagName = "flotilla.local/demo:v7"
	if err := imagebuild.WriteTarball(path, tagName, img); err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(tagName)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := tarball.ImageFromPath(path, &tag)
	if err != nil {
		t.Fatalf("read back %s: %v", path, err)
	}

	cf, err := loaded.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform = %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/app"}) {
		t.Errorf("Entrypoint = %q, want [/app]", cf.Config.Entrypoint)
	}
	if !slices.Contains(cf.Config.Env, "PORT=8080") {
		t.Errorf("Env = %q, want PORT=8080", cf.Config.Env)
	}
	if _, ok := cf.Config.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("ExposedPorts = %v, want 8080/tcp", cf.Config.ExposedPorts)
	}
	if got := cf.Config.Labels[imagebuild.VersionLabel]; got != "v7" {
		t.Errorf("version label = %q, want v7", got)
	}

	layers, err := loaded.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d (%v), want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	entries := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[h.Name] = h
	}
	app, ok := entries["app"]
	if !ok || app.Mode != 0o755 || app.Size < 1<<20 {
		t.Errorf("app entry = %+v, want a 0755 binary", app)
	}
	if tmp, ok := entries["tmp/"]; !ok || tmp.Typeflag != tar.TypeDir {
		t.Errorf("tmp/ entry = %+v, want a directory", tmp)
	}
}

func TestImageIsReproducible(t *testing.T) {
	a, err := imagebuild.Image([]byte("#!binary"), "v1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := imagebuild.Image([]byte("#!binary"), "v1")
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("digests differ: %s vs %s", da, db)
	}
}

func TestWriteMultiTarball(t *testing.T) {
	imgs := map[string]v1.Image{}
	for _, v := range []string{"v1", "v2"} {
		img, err := imagebuild.Image([]byte("bin-"+v), v)
		if err != nil {
			t.Fatal(err)
		}
		imgs["flotilla.local/demo:"+v] = img
	}
	path := filepath.Join(t.TempDir(), "multi.tar")
	if err := imagebuild.WriteMultiTarball(path, imgs); err != nil {
		t.Fatal(err)
	}
	for tagName, want := range imgs {
		tag, _ := name.NewTag(tagName)
		got, err := tarball.ImageFromPath(path, &tag)
		if err != nil {
			t.Fatalf("read %s: %v", tagName, err)
		}
		gd, _ := got.Digest()
		wd, _ := want.Digest()
		if gd != wd {
			t.Errorf("%s: digest %s, want %s", tagName, gd, wd)
		}
	}
}
