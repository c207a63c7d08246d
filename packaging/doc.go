// Package packaging holds what installs sallyport as a service: the
// systemd units in systemd/ and the container recipe in container/. Its
// tests check them with the tools that will run them (systemd-analyze,
// podman) and run the binary the way the units and the image do.
package packaging
