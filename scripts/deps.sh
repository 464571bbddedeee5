# Sourced by the other scripts: installs, from Debian's packages, whatever of the given list is
# missing. Runs apt-get only when something is missing; uses sudo when not root.
install_debian_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  echo "vox: installing from Debian: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# What building and testing vox needs. The JPEG, JPEG-LS and JPEG 2000 libraries are optional DICOM
# decoders (vox builds without them); python3-torch, -nibabel, -pydicom and -gdcm serve the test
# fixtures only. OpenMPI starts and connects data-parallel ranks (mpirun; vox builds without it).
VOX_BUILD_PACKAGES=(cmake g++ make zlib1g-dev doctest-dev libjpeg62-turbo-dev libcharls-dev libopenjp2-7-dev libopenmpi-dev openmpi-bin)
VOX_TEST_PACKAGES=(python3-torch python3-numpy python3-scipy python3-nibabel python3-pydicom python3-gdcm python3-venv)
