#!/usr/bin/env python3
"""Builds a host-sized rpm database for bench/trust-load.sh: PACKAGES packages of
FILES_PER files each (default 1,500 x 133 = 199,500 files), one rpmbuild run (one spec,
one subpackage each), installed with `rpm --root ROOT --justdb` into ROOT.
Usage: hostsim_rpmdb.py OUT_DIR [PACKAGES FILES_PER]"""
import os, subprocess, sys

out = os.path.abspath(sys.argv[1])
packages = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
files_per = int(sys.argv[3]) if len(sys.argv) > 3 else 133
stage = os.path.join(out, "stage")
for p in range(packages):
    d = os.path.join(stage, "usr/share/hostsim/p%d" % p)
    os.makedirs(d, exist_ok=True)
    for f in range(files_per):
        with open(os.path.join(d, "f%d" % f), "w") as fh:
            fh.write("%d-%d\n" % (p, f))
spec = ["Name: hostsim\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\nBuildArch: noarch\n%description\ns\n"]
for p in range(packages):
    spec.append("%%package -n hostsim-%d\nSummary: s\n%%description -n hostsim-%d\ns\n" % (p, p))
spec.append("%%install\ncp -a %s/. %%{buildroot}/\n" % stage)
for p in range(packages):
    spec.append("%%files -n hostsim-%d\n/usr/share/hostsim/p%d\n" % (p, p))
spec_path = os.path.join(out, "hostsim.spec")
open(spec_path, "w").write("".join(spec))
rpms = os.path.join(out, "rpms")
subprocess.run(["rpmbuild", "-bb", "--quiet",
                "--define", "_topdir " + os.path.join(out, "top"),
                "--define", "_rpmdir " + rpms,
                "--define", "_build_id_links none",
                "--define", "__os_install_post %{nil}",
                "--define", "_binary_payload w1.gzdio", spec_path], check=True)
root = os.path.join(out, "root")
os.makedirs(root, exist_ok=True)
subprocess.run(["rpm", "--root", root, "--dbpath", "/var/lib/rpm", "--initdb"], check=True)
built = sorted(os.path.join(rpms, "noarch", f) for f in os.listdir(os.path.join(rpms, "noarch")))
subprocess.run(["rpm", "--root", root, "--dbpath", "/var/lib/rpm", "-i", "--justdb", "--nodeps",
                "--nosignature", "--noscripts"] + built, check=True, stderr=subprocess.DEVNULL)
print(root)
