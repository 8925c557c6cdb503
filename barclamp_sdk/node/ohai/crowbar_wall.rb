# frozen_string_literal: true
#
# barclamp-sdk: what the Crowbar model reads from a node and Ohai lacks.
#
#   crowbar_wall.boot_disk      the disk the OS boots from ("sda"): the disk of
#                               /boot/efi, else /boot, else /
#   crowbar_wall.disks_in_use   disk -> why it is in use (mounted file system,
#                               swap, a RAID set, LVM or dm-crypt), never offered
#                               for data
#   crowbar_wall.bmc            the BMC as the node sees it (`ipmitool lan print`):
#                               address, mac, netmask, gateway, source, channel
#   crowbar_wall.rack, .hypervisor_host ...
#                               site facts an operator writes to
#                               /etc/crowbar/wall.json (a JSON object)
#   crowbar_wall.last_run       how the previous chef-client run ended, as the
#                               run handler (../handlers/crowbar_last_run.rb) wrote
#                               it to /var/lib/crowbar/last_run.json
#                               (CROWBAR_WALL_LAST_RUN_FILE)
#   crowbar_wall.collector      name, version and notes (what could not be read)
#
# Every part degrades on its own: no ipmitool, no /dev/ipmi0, no /sys (a
# container), an unreadable file each add a note and leave the rest intact.
#
# Load it with `ohai -d DIR` or Chef's `ohai.plugin_path << DIR`.
# CROWBAR_WALL_IPMITOOL_OPTIONS (for example "-I lanplus -H 10.0.0.5 -U u -P p")
# reads a BMC over the network instead of the local IPMI device;
# CROWBAR_WALL_IPMITOOL names the ipmitool to run (default: found on PATH);
# CROWBAR_WALL_ROOT reads /sys, /proc and /dev under another root (tests).

require "json"

Ohai.plugin(:CrowbarWall) do
  provides "crowbar_wall"

  COLLECTOR_VERSION = 1 unless defined?(COLLECTOR_VERSION)

  def wall_notes
    @wall_notes ||= []
  end

  # -- disks -------------------------------------------------------------------

  # Where /sys, /proc and /dev are read ("" on a node; a copy of them in tests).
  def host_root
    @host_root ||= ENV["CROWBAR_WALL_ROOT"].to_s.chomp("/")
  end

  def host(path)
    "#{host_root}#{path}"
  end

  def sys_block(name)
    host("/sys/class/block/#{name}")
  end

  # The block device (kernel name) holding the file system mounted at +path+.
  def device_of_path(path)
    stat = File.stat(host(path))
    link = host("/sys/dev/block/#{stat.dev_major}:#{stat.dev_minor}")
    File.exist?(link) ? File.basename(File.realpath(link)) : nil
  rescue SystemCallError
    nil
  end

  # The kernel name of a device path ("/dev/mapper/vg-root" -> "dm-0").
  def device_of_source(source)
    return nil unless source.start_with?("/dev/")

    name = File.basename(File.realpath(host(source)))
    File.exist?(sys_block(name)) ? name : nil
  rescue SystemCallError
    nil
  end

  # Whole disks under a block device: a partition's disk; the members of a
  # RAID set, LVM volume or dm-crypt mapping, recursively.
  def physical_disks(name, seen = {})
    return [] if name.nil? || seen[name]

    seen[name] = true
    dir = sys_block(name)
    return [] unless File.exist?(dir)

    if File.exist?("#{dir}/partition")
      return physical_disks(File.basename(File.dirname(File.realpath(dir))), seen)
    end

    slaves = Dir.glob("#{dir}/slaves/*").map { |s| File.basename(s) }.sort
    return slaves.flat_map { |s| physical_disks(s, seen) }.uniq unless slaves.empty?

    [name]
  rescue SystemCallError
    []
  end

  # Mounted file systems backed by a block device: [[kernel name, mount point]].
  def block_mounts
    File.readlines(host("/proc/self/mounts")).filter_map do |line|
      source, mountpoint = line.split(" ", 3)
      next if source.nil? || mountpoint.nil?

      mountpoint = mountpoint.gsub("\\040", " ")
      device = device_of_source(source)
      device ||= device_of_path(mountpoint) if mountpoint == "/"
      [device, mountpoint] if device
    end
  rescue SystemCallError => e
    wall_notes << "mounts not read: #{e.message}"
    []
  end

  def add_use(uses, disks, why)
    disks.each { |disk| (uses[disk] ||= []) << why unless (uses[disk] || []).include?(why) }
  end

  # What kind of device stacks on its members: "raid", "lvm", "dm-crypt", "multipath" ...
  def holder_kind(holder)
    return "raid" if holder.start_with?("md")

    uuid_file = "#{sys_block(holder)}/dm/uuid"
    uuid = File.exist?(uuid_file) ? File.read(uuid_file) : ""
    { "LVM-" => "lvm", "CRYPT-" => "dm-crypt", "mpath-" => "multipath" }.each do |prefix, kind|
      return kind if uuid.start_with?(prefix)
    end
    holder.start_with?("dm-") ? "device-mapper" : "stacked"
  end

  def disks_in_use(mounts)
    uses = {}
    mounts.each { |device, mountpoint| add_use(uses, physical_disks(device), "mounted #{mountpoint}") }
    if File.exist?(host("/proc/swaps"))
      File.readlines(host("/proc/swaps")).drop(1).each do |line|
        source, kind = line.split
        next if source.nil?

        device = kind == "file" ? device_of_path(source) : device_of_source(source)
        add_use(uses, physical_disks(device), "swap #{source}") if device
      end
    end
    Dir.glob(host("/sys/class/block/*/slaves/*")).sort.each do |slave|
      holder = File.basename(File.dirname(File.dirname(slave)))
      add_use(uses, physical_disks(File.basename(slave)), "#{holder_kind(holder)} #{holder}")
    end
    uses.transform_values(&:sort).sort.to_h
  rescue SystemCallError => e
    wall_notes << "disks in use not read: #{e.message}"
    {}
  end

  def boot_disk(mounts)
    by_mount = mounts.to_h { |device, mountpoint| [mountpoint, device] }
    ["/boot/efi", "/boot", "/"].each do |mountpoint|
      disks = physical_disks(by_mount[mountpoint])
      return disks.first unless disks.empty?
    end
    wall_notes << "boot disk unknown: / is not on a block device (a container?)"
    nil
  end

  # -- the BMC -----------------------------------------------------------------

  def ipmi_device?
    %w{/dev/ipmi0 /dev/ipmi/0 /dev/ipmidev/0}.any? { |d| File.exist?(host(d)) }
  end

  def parse_lan_print(text)
    fields = {}
    text.each_line do |line|
      key, value = line.split(":", 2).map { |part| part.to_s.strip }
      fields[key] = value if key && !key.empty? && value && !value.empty?
    end
    fields
  end

  def bmc_info
    remote = ENV["CROWBAR_WALL_IPMITOOL_OPTIONS"].to_s.split
    if remote.empty? && !ipmi_device?
      wall_notes << "no BMC: no IPMI device (/dev/ipmi0); load ipmi_si and ipmi_devintf if the machine has one"
      return nil
    end
    ipmitool = ENV["CROWBAR_WALL_IPMITOOL"] || which("ipmitool")
    unless ipmitool && File.executable?(ipmitool)
      wall_notes << "BMC not read: ipmitool is not installed"
      return nil
    end
    [1, 2, 8].each do |channel|
      result = shell_out([ipmitool, *remote, "lan", "print", channel.to_s], timeout: 15)
      if result.exitstatus != 0 && result.stderr =~ /unable to establish|could not open device|no such file|timeout|insufficient privilege/i
        wall_notes << "BMC not read: #{result.stderr.lines.first.to_s.strip}"
        return nil
      end
      next unless result.exitstatus == 0

      fields = parse_lan_print(result.stdout)
      mac = fields["MAC Address"].to_s.downcase
      next if mac.empty? || mac == "00:00:00:00:00:00"

      bmc = Mash.new
      bmc[:channel] = channel
      bmc[:mac] = mac
      address = fields["IP Address"].to_s
      bmc[:address] = address unless address.empty? || address == "0.0.0.0"
      bmc[:netmask] = fields["Subnet Mask"] if fields["Subnet Mask"]
      bmc[:gateway] = fields["Default Gateway IP"] if fields["Default Gateway IP"]
      bmc[:source] = fields["IP Address Source"] if fields["IP Address Source"]
      wall_notes << "BMC on channel #{channel} has no address yet" unless bmc[:address]
      return bmc
    end
    wall_notes << "BMC not read: `ipmitool lan print` answered no LAN channel (1, 2, 8)"
    nil
  rescue Ohai::Exceptions::Exec => e
    wall_notes << "BMC not read: ipmitool failed (#{e.message.lines.first.to_s.strip})"
    nil
  end

  # -- site facts --------------------------------------------------------------

  def site_facts
    path = ENV["CROWBAR_WALL_SITE_FILE"] || "/etc/crowbar/wall.json"
    return {} unless File.exist?(path)

    data = JSON.parse(File.read(path))
    unless data.is_a?(Hash)
      wall_notes << "#{path} ignored: not a JSON object"
      return {}
    end
    data.reject { |key, _| %w{bmc boot_disk disks_in_use collector last_run}.include?(key) }
  rescue JSON::ParserError, SystemCallError => e
    wall_notes << "#{path} ignored: #{e.message.lines.first.to_s.strip}"
    {}
  end

  # -- the last chef-client run -------------------------------------------------

  def last_run
    path = ENV["CROWBAR_WALL_LAST_RUN_FILE"] || "/var/lib/crowbar/last_run.json"
    return nil unless File.exist?(path)

    data = JSON.parse(File.read(path))
    return data if data.is_a?(Hash)

    wall_notes << "#{path} ignored: not a JSON object"
    nil
  rescue JSON::ParserError, SystemCallError => e
    wall_notes << "#{path} ignored: #{e.message.lines.first.to_s.strip}"
    nil
  end

  def finish(wall)
    run = last_run
    wall[:last_run] = run if run
    wall[:collector] = Mash.new(name: "barclamp-sdk crowbar_wall", version: COLLECTOR_VERSION,
                                notes: wall_notes)
    crowbar_wall wall
  end

  collect_data(:linux) do
    wall = Mash.new(site_facts)
    mounts = block_mounts
    disk = boot_disk(mounts)
    wall[:boot_disk] = disk if disk
    wall[:disks_in_use] = disks_in_use(mounts)
    bmc = bmc_info
    wall[:bmc] = bmc if bmc
    finish(wall)
  rescue StandardError => e # never leave the node without crowbar_wall
    wall_notes << "crowbar_wall incomplete: #{e.class}: #{e.message.lines.first.to_s.strip}"
    finish(wall || Mash.new)
  end

  collect_data(:default) do
    wall = Mash.new(site_facts)
    wall_notes << "#{RUBY_PLATFORM}: only site facts are reported on this platform"
    finish(wall)
  end
end
