# Vivado batch build of the dwsep overlay for the PYNQ-Z2: dwsep.bit + dwsep.hwh beside this
# script.
#
#   dwsep build --board pynq-z2 [--config NAME] [--clock-mhz F] [--out DIR]
#   vivado -mode batch -source DIR/build.tcl [-tclargs JOBS]
#
# `dwsep build` writes this script's folder: dwsep_top.v (the accelerator),
# dwsep_accelerator.v (its Vivado shell), settings.tcl (config, part, fabric clock, the AXI
# subordinate and manager port names) and a copy of this script and ps7_pynq_z2.tcl. Steps:
# package the shell as IP dwsep.org:dwsep:accelerator:1.0 (the PYNQ driver binds to this
# VLNV), build a block design (PS7 with PYNQ-Z2 settings, FCLK_CLK0 at the chosen clock;
# registers on M_AXI_GP0 through an AXI interconnect; DDR through one AXI interconnect per
# manager, which converts AXI4 to AXI3, to S_AXI_HP0, S_AXI_HP1, ... in the managers' order
# in settings.tcl: m_axi, m_axi_res, m_axi_pf); irq to IRQ_F2P), then synthesize, implement,
# write the bitstream and copy the block design's hardware handoff.
# Written without access to Vivado: untested (see bitstreams/README.md).

set ip_vendor dwsep.org
set ip_library dwsep
set ip_name accelerator
set ip_version 1.0
set bd_name dwsep
set out [file dirname [file normalize [info script]]]

if {$argc > 1} {
    puts stderr "usage: vivado -mode batch -source build.tcl \[-tclargs JOBS\]"
    exit 2
}
set jobs [expr {$argc > 0 ? [lindex $argv 0] : 2}]
set sources [list [file join $out dwsep_top.v] [file join $out dwsep_accelerator.v]]
foreach f [concat $sources [list [file join $out settings.tcl]]] {
    if {![file exists $f]} {
        puts stderr "missing $f: run dwsep build --out $out first"
        exit 2
    }
}
source [file join $out settings.tcl]
set part $dwsep_part
source [file join $out ps7_pynq_z2.tcl]

# ---- 1. package the accelerator as IP ------------------------------------------------------
proc package_ip {out sources} {
    global part ip_vendor ip_library ip_name ip_version dwsep_slaves dwsep_masters
    set ip_dir [file join $out ip]
    file delete -force $ip_dir [file join $out ip_project]
    create_project -force ip_project [file join $out ip_project] -part $part
    add_files -norecurse $sources
    set_property top dwsep_accelerator [current_fileset]
    update_compile_order -fileset sources_1
    ipx::package_project -root_dir $ip_dir -vendor $ip_vendor -library $ip_library \
        -taxonomy /UserIP -import_files
    set core [ipx::current_core]
    set_property vendor $ip_vendor $core
    set_property library $ip_library $core
    set_property name $ip_name $core
    set_property version $ip_version $core
    set_property display_name {dwsep depthwise-separable CNN accelerator} $core
    set_property description {dwsep accelerator: AXI4-Lite registers, AXI4 DDR master} $core
    set_property supported_families {zynq Production} $core
    foreach bus [concat $dwsep_slaves $dwsep_masters] {
        ipx::associate_bus_interfaces -busif $bus -clock aclk $core
    }
    # Each register window: 64 KiB, one address block (the packager infers it from the
    # AXI4-Lite address width on most versions; make sure it exists).
    foreach bus $dwsep_slaves {
        set busif [ipx::get_bus_interfaces $bus -of_objects $core]
        if {[llength [ipx::get_memory_maps $bus -of_objects $core]] == 0} {
            ipx::add_memory_map $bus $core
            set_property slave_memory_map_ref $bus $busif
        }
        set mmap [ipx::get_memory_maps $bus -of_objects $core]
        if {[llength [ipx::get_address_blocks -of_objects $mmap]] == 0} {
            ipx::add_address_block reg0 $mmap
        }
        set_property range 65536 [lindex [ipx::get_address_blocks -of_objects $mmap] 0]
    }
    ipx::create_xgui_files $core
    ipx::update_checksums $core
    ipx::check_integrity $core
    ipx::save_core $core
    close_project
    return $ip_dir
}

# ---- 2. block design ------------------------------------------------------------------------
proc build_block_design {bd_name vlnv} {
    global dwsep_slaves dwsep_masters
    create_bd_design $bd_name

    set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:processing_system7:5.5 ps7]
    set_property -dict [ps7_pynq_z2_config $::dwsep_fclk_mhz] $ps
    apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 \
        -config {make_external "FIXED_IO, DDR" apply_board_preset "0" Master "Disable" Slave "Disable"} \
        $ps

    create_bd_cell -type ip -vlnv $vlnv dwsep
    create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset:5.0 rst_fclk0
    set ctrl [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_interconnect:2.1 axi_ctrl]
    set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI [llength $dwsep_slaves]] $ctrl
    set i 0
    foreach bus $dwsep_masters {
        set mem [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_interconnect:2.1 axi_mem$i]
        set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $mem
        incr i
    }

    # One clock (FCLK_CLK0) for the PS ports, both interconnects and the accelerator;
    # interconnect port clocks and resets are collected while the buses are connected.
    set clocks [list [get_bd_pins ps7/M_AXI_GP0_ACLK] \
        [get_bd_pins dwsep/aclk] [get_bd_pins rst_fclk0/slowest_sync_clk] \
        [get_bd_pins axi_ctrl/ACLK] [get_bd_pins axi_ctrl/S00_ACLK]]
    set resets [list [get_bd_pins dwsep/aresetn] [get_bd_pins axi_ctrl/S00_ARESETN]]
    set interconnect_resets [list [get_bd_pins axi_ctrl/ARESETN]]

    connect_bd_intf_net [get_bd_intf_pins ps7/M_AXI_GP0] [get_bd_intf_pins axi_ctrl/S00_AXI]
    set i 0
    foreach bus $dwsep_slaves {
        set port [format M%02d $i]
        connect_bd_intf_net [get_bd_intf_pins axi_ctrl/${port}_AXI] [get_bd_intf_pins dwsep/$bus]
        lappend clocks [get_bd_pins axi_ctrl/${port}_ACLK]
        lappend resets [get_bd_pins axi_ctrl/${port}_ARESETN]
        incr i
    }
    set i 0
    foreach bus $dwsep_masters {
        connect_bd_intf_net [get_bd_intf_pins dwsep/$bus] [get_bd_intf_pins axi_mem$i/S00_AXI]
        connect_bd_intf_net [get_bd_intf_pins axi_mem$i/M00_AXI] \
            [get_bd_intf_pins ps7/S_AXI_HP$i]
        lappend clocks [get_bd_pins ps7/S_AXI_HP${i}_ACLK] [get_bd_pins axi_mem$i/ACLK] \
            [get_bd_pins axi_mem$i/S00_ACLK] [get_bd_pins axi_mem$i/M00_ACLK]
        lappend resets [get_bd_pins axi_mem$i/S00_ARESETN] [get_bd_pins axi_mem$i/M00_ARESETN]
        lappend interconnect_resets [get_bd_pins axi_mem$i/ARESETN]
        incr i
    }

    connect_bd_net [get_bd_pins ps7/FCLK_CLK0] {*}$clocks
    connect_bd_net [get_bd_pins ps7/FCLK_RESET0_N] [get_bd_pins rst_fclk0/ext_reset_in]
    connect_bd_net [get_bd_pins rst_fclk0/interconnect_aresetn] {*}$interconnect_resets
    connect_bd_net [get_bd_pins rst_fclk0/peripheral_aresetn] {*}$resets
    connect_bd_net [get_bd_pins dwsep/irq] [get_bd_pins ps7/IRQ_F2P]

    # Register windows from the start of the GP0 window, 64 KiB each; every accelerator
    # manager sees all of DDR through its HP port.
    set offset 0x40000000
    foreach bus $dwsep_slaves {
        assign_bd_address -offset [format 0x%08X $offset] -range 64K \
            -target_address_space [get_bd_addr_spaces ps7/Data] \
            [get_bd_addr_segs -of_objects [get_bd_intf_pins dwsep/$bus]]
        incr offset 0x10000
    }
    set i 0
    foreach bus $dwsep_masters {
        assign_bd_address -target_address_space [get_bd_addr_spaces dwsep/$bus] \
            [get_bd_addr_segs ps7/S_AXI_HP$i/HP${i}_DDR_LOWOCM]
        incr i
    }

    validate_bd_design
    save_bd_design
}

# ---- 3. project, implementation, outputs -----------------------------------------------------
set ip_dir [package_ip $out $sources]

create_project -force dwsep [file join $out vivado] -part $part
set_property ip_repo_paths [list $ip_dir] [current_project]
update_ip_catalog -rebuild
build_block_design $bd_name "$ip_vendor:$ip_library:$ip_name:$ip_version"

set bd_file [get_files $bd_name.bd]
generate_target all $bd_file
add_files -norecurse [make_wrapper -files $bd_file -top]
set_property top ${bd_name}_wrapper [current_fileset]
update_compile_order -fileset sources_1

launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} {
    puts stderr "implementation failed: see [get_property DIRECTORY [get_runs impl_1]]"
    exit 1
}

open_run impl_1
report_utilization -file [file join $out utilization.rpt]
report_timing_summary -file [file join $out timing.rpt]
set wns [get_property SLACK [get_timing_paths -max_paths 1 -nworst 1 -setup]]
if {$wns < 0} {
    puts "WARNING: timing not met at $dwsep_fclk_mhz MHz (WNS $wns ns): see [file join $out timing.rpt]"
}

set impl_dir [get_property DIRECTORY [get_runs impl_1]]
file copy -force [file join $impl_dir ${bd_name}_wrapper.bit] [file join $out dwsep.bit]
# The hardware handoff sits under <project>.gen (Vivado 2020.2+) or <project>.srcs (older).
set hwh [glob -nocomplain [file join $out vivado dwsep.gen sources_1 bd $bd_name hw_handoff \
    $bd_name.hwh] [file join $out vivado dwsep.srcs sources_1 bd $bd_name hw_handoff \
    $bd_name.hwh]]
if {[llength $hwh] == 0} {
    puts stderr "no $bd_name.hwh found under [file join $out vivado]"
    exit 1
}
file copy -force [lindex $hwh 0] [file join $out dwsep.hwh]
puts "wrote [file join $out dwsep.bit] and [file join $out dwsep.hwh]"
