// Package imagebuild packs a static binary into a one-layer OCI image with
// go-containerregistry, without Docker or buildah: the binary at /app, an
// empty /tmp, Entrypoint ["/app"], PORT=8080. tools/mkimage is its command
// line; tests use it to build the demo image they run under containerd.
//
// It owns nothing but building, writing (docker-save tarball) and pushing
// such images.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// DemoPackage is the import path of the demo app.
const DemoPackage = "github.com/flotilla-io/flotilla/demo/app"

// Image layout constants.
const (
	BinaryPath = "/app"
	Port       = "8080"
	// VersionLabel records the version baked into the binary.
	VersionLabel = "io.flotilla.demo.version"
)

// BuildOptions says what to compile.
type BuildOptions struct {
	// Package is the Go package to build; default DemoPackage.
	Package string
	// Dir is a directory inside the module to run go build in; default the
	// current directory.
	Dir string
	// Version is baked in with -ldflags "-X main.version=..."; default "v1".
	Version string
	// Output is the binary to write.
	Output string
}

// BuildBinary compiles a static linux/amd64 binary
// (CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=...").
func BuildBinary(ctx context.Context, opts BuildOptions) error {
	if opts.Package == "" {
		opts.Package = DemoPackage
	}
	if opts.Version == "" {
		opts.Version = "v1"
	}
	if opts.Output == "" {
		return errors.New("imagebuild: BuildOptions.Output is empty")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("go toolchain not found in PATH: %w", err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath",
		"-ldflags", "-s -w -X main.version="+opts.Version,
		"-o", opts.Output, opts.Package)
	cmd.Dir = opts.Dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %w\n%s", opts.Package, err, out)
	}
	return nil
}

// Image packs binary into a linux/amd64 image: /app (0755), /tmp (1777),
// Entrypoint ["/app"], Env PORT=8080, ExposedPorts 8080/tcp. version is
// recorded as a label. The result is reproducible: timestamps are zero.
func Image(binary []byte, version string) (v1.Image, error) {
	layerTar, err := rootfsTar(binary)
	if err != nil {
		return nil, err
	}
	return oneLayerImage(layerTar, func(c *v1.Config) {
		c.Entrypoint = []string{BinaryPath}
		c.Cmd = nil
		c.Env = []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"PORT=" + Port,
		}
		c.ExposedPorts = map[string]struct{}{Port + "/tcp": {}}
		c.Labels = map[string]string{VersionLabel: version}
	})
}

// oneLayerImage is a linux/amd64 image of the one layer layerTar (an
// uncompressed tar), working directory /, with configure's settings.
func oneLayerImage(layerTar []byte, configure func(*v1.Config)) (v1.Image, error) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("make layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = "amd64"
	cf.OS = "linux"
	cf.Config.WorkingDir = "/"
	configure(&cf.Config)
	return mutate.ConfigFile(img, cf)
}

// rootfsTar returns an uncompressed tar holding /app and /tmp.
func rootfsTar(binary []byte) ([]byte, error) {
	return tarFiles([]file{
		{name: "tmp/", mode: 0o1777},
		{name: "app", mode: 0o755, data: binary},
	})
}

// file is one entry of a layer: a directory (name ends in /), a symlink
// (link set) or a regular file.
type file struct {
	name     string
	mode     int64
	data     []byte
	link     string
	uid, gid int
}

// tarFiles returns an uncompressed tar of files, with zero timestamps.
func tarFiles(files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.gid, ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case strings.HasSuffix(f.name, "/"):
			h.Typeflag = tar.TypeDir
		case f.link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.link, 0o777
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// BuildDemo compiles the demo app with version (running go build in dir, any
// directory inside this module; "" for the current one) and packs it.
func BuildDemo(ctx context.Context, dir, version string) (v1.Image, error) {
	tmp, err := os.MkdirTemp("", "imagebuild-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "app")
	if err := BuildBinary(ctx, BuildOptions{Dir: dir, Version: version, Output: bin}); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	return Image(b, version)
}

// WriteTarball writes img as a docker-save tarball (what `docker load`,
// `ctr images import` and containerd's client Import accept) tagged tag,
// e.g. "flotilla.local/demo:v1".
func WriteTarball(path, tag string, img v1.Image) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("bad tag %q: %w", tag, err)
	}
	if err := tarball.WriteToFile(path, ref, img); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteMultiTarball writes several tagged images into one docker-save
// tarball.
func WriteMultiTarball(path string, imgs map[string]v1.Image) error {
	refs := make(map[name.Tag]v1.Image, len(imgs))
	for tag, img := range imgs {
		ref, err := name.NewTag(tag)
		if err != nil {
			return fmt.Errorf("bad tag %q: %w", tag, err)
		}
		refs[ref] = img
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := tarball.MultiWrite(refs, f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// Push pushes img to ref (e.g. "127.0.0.1:5000/demo:v1") over plain HTTP.
func Push(ctx context.Context, ref string, img v1.Image) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return fmt.Errorf("bad reference %q: %w", ref, err)
	}
	if err := remote.Write(r, img, remote.WithContext(ctx), remote.WithTransport(newTransport())); err != nil {
		return fmt.Errorf("push %s: %w; check that the registry is up and serves plain HTTP", ref, err)
	}
	return nil
}

// newTransport is an HTTP transport with timeouts; never the default one.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
	}
}
