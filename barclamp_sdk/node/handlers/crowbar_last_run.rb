# frozen_string_literal: true
#
# barclamp-sdk: a Chef report and exception handler recording how each
# chef-client run ended, so that a rollout in waves knows when a machine has
# run with its new role and whether the run succeeded.
#
#   crowbar_wall.last_run.started_at     when the run started (UTC, ISO 8601)
#   crowbar_wall.last_run.ended_at       when it ended
#   crowbar_wall.last_run.success        true or false
#   crowbar_wall.last_run.error          the first line of the exception (failed runs)
#   crowbar_wall.last_run.role_revision  crowbar-revision of the machine's
#                                        crowbar-<node> role the run compiled with
#
# The record is saved in the node (an automatic attribute: a fact the node
# owns; a failed run does not save its node, so the handler does) and in
# /var/lib/crowbar/last_run.json (CROWBAR_WALL_LAST_RUN_FILE), which the
# crowbar_wall Ohai plugin reads back at the start of the next run.
#
# In client.rb:
#   require "/path/to/crowbar_last_run.rb"
#   crowbar_last_run = BarclampSdk::LastRun.new
#   report_handlers << crowbar_last_run
#   exception_handlers << crowbar_last_run

require "chef/handler"
require "fileutils"
require "json"
require "time"

module BarclampSdk
  class LastRun < Chef::Handler
    def initialize(path = ENV["CROWBAR_WALL_LAST_RUN_FILE"] || "/var/lib/crowbar/last_run.json")
      super()
      @path = path
    end

    def record
      crowbar = node["crowbar"] || {}
      result = {
        "started_at" => run_status.start_time.utc.iso8601,
        "ended_at" => (run_status.end_time || Time.now).utc.iso8601,
        "success" => run_status.success?,
        "role_revision" => crowbar["crowbar-revision"].to_i,
      }
      result["error"] = run_status.exception.to_s.lines.first.to_s.strip[0, 500] if run_status.failed?
      result
    end

    def report
      result = record
      FileUtils.mkdir_p(File.dirname(@path))
      File.write("#{@path}.tmp", JSON.generate(result))
      File.rename("#{@path}.tmp", @path)
      node.automatic["crowbar_wall"] ||= {}
      node.automatic["crowbar_wall"]["last_run"] = result
      node.save
    rescue StandardError => e # a report must never fail the run
      Chef::Log.warn("crowbar_last_run: could not record the run: #{e.class}: #{e.message}")
    end
  end
end
