// How each provider this program uses turns an input diff into a step, what it computes on
// create, and what the lab answers for its data sources. The lab engine (engine.ts) calls this;
// each rule cites the source it was taken from.
import * as crypto from "node:crypto";
import type * as pulumi from "@pulumi/pulumi";
import { type Kind, touches } from "./propertyDiff";

export type Change = "same" | "update" | "replace";

/**
 * Fields a change of which makes the provider replace the resource (Terraform `ForceNew`, read
 * from the providers' schemas; see the README's lab table). A change anywhere else is an update.
 */
const FORCE_NEW: Record<string, readonly string[]> = {
    // terraform-provider-oci v8.23.0 (bridged by @pulumi/oci 4.20.0), internal/service/core/:
    // core_instance_resource.go: availability_domain (45-50), create_vnic_details.subnet_id
    // (293-298) and .assign_ipv6ip (168-173) are ForceNew; metadata's ssh_authorized_keys and
    // user_data are ForceNewIfChange in CustomizeDiff (1053-1060). source_details.source_id is
    // updatable (915-919): see REBUILDS_INSTANCE.
    "oci:Core/instance:Instance": ["availabilityDomain", "createVnicDetails.subnetId", "createVnicDetails.assignIpv6ip", "metadata.ssh_authorized_keys", "metadata.user_data"],
    // core_vcn_resource.go dns_label (87-93); is_ipv6enabled is updated in place.
    "oci:Core/vcn:Vcn": ["dnsLabel"],
    // core_subnet_resource.go vcn_id (40-44), dns_label (76-82), prohibit_public_ip_on_vnic (118-123).
    "oci:Core/subnet:Subnet": ["vcnId", "dnsLabel", "prohibitPublicIpOnVnic"],
    // core_internet_gateway_resource.go (33-38), core_route_table_resource.go (36-41),
    // core_security_list_resource.go (36-41): vcn_id.
    "oci:Core/internetGateway:InternetGateway": ["vcnId"],
    "oci:Core/routeTable:RouteTable": ["vcnId"],
    "oci:Core/securityList:SecurityList": ["vcnId"],
    // terraform-provider-ovh v2.19.0 ovh/resource_cloud_project_instance.go has no Update
    // (16-19): every argument is ForceNew.
    "ovh:CloudProject/instance:Instance": ["*"],
    // terraform-provider-random: every argument of random_bytes is ForceNew.
    "random:index/randomBytes:RandomBytes": ["length", "keepers"],
};

/** Fields whose in-place update rebuilds a cloud instance's disk: to the lab, a new machine. */
export const REBUILDS_INSTANCE: Record<string, readonly string[]> = {
    // core_instance_resource.go: source_details.source_id is updatable (915-919) by
    // UpdateInstanceSourceViaImageDetails (2475-2527): the boot volume is replaced in place.
    "oci:Core/instance:Instance": ["sourceDetails.sourceId"],
};

export const isCommand = (type: string) => type === "command:remote:Command" || type === "command:local:Command";

/**
 * The step for a changed resource. `replaceOnChanges` is the resource option (the engine's
 * applyReplaceOnChanges, pkg/resource/deploy/step_generator.go); the provider adds its own.
 * @pulumi/command 1.2.x (pulumi-go-provider v1.3.0 infer/resource.go `Diff`): Command implements
 * Update, so only a change of the whole `triggers` property (schema replaceOnChanges,
 * common/inputs.go) replaces it; the SDK adds `replaceOnChanges: ["triggers[*]"]` for its elements
 * (sdk/nodejs/remote/command.ts); everything else is an update.
 */
export function changeFor(type: string, diff: Map<string, Kind>, replaceOnChanges: readonly string[]): Change {
    if (diff.size === 0) return "same";
    if (touches(diff, replaceOnChanges)) return "replace";
    if (isCommand(type)) return diff.has("triggers") ? "replace" : "update";
    return touches(diff, FORCE_NEW[type] ?? []) ? "replace" : "update";
}

/** Outputs a provider computes on create (beyond the inputs it mirrors). */
export function computedOnCreate(type: string, inputs: Record<string, unknown>, cloud: { v4: string; v6: string }): Record<string, unknown> {
    switch (type) {
        // Made once, then kept in state like the random provider keeps it.
        case "random:index/randomBytes:RandomBytes": {
            const bytes = crypto.randomBytes(Number(inputs.length));
            return { base64: bytes.toString("base64"), hex: bytes.toString("hex") };
        }
        case "oci:Core/vcn:Vcn":
            return { ipv6cidrBlocks: ["2001:db8:10::/56"], defaultRouteTableId: "lab-rt", defaultSecurityListId: "lab-sl", defaultDhcpOptionsId: "lab-dhcp" };
        case "oci:Core/instance:Instance":
            return { publicIp: cloud.v4, privateIp: "10.0.0.2", state: "RUNNING" };
        case "ovh:CloudProject/instance:Instance":
            return { addresses: [{ ip: cloud.v4, version: 4 }, { ip: cloud.v6, version: 6 }], status: "ACTIVE" };
        default:
            return {};
    }
}

/** The names of the outputs computedOnCreate fills (unknown in a preview that creates the resource). */
export function computedNames(type: string): string[] {
    if (isCommand(type)) return ["stdout", "stderr"];
    return Object.keys(computedOnCreate(type, { length: 1 }, { v4: "", v6: "" }));
}

/** The data sources the program reads. `newerImages` plays a month later: the cloud has published new images. */
export function invoke(args: pulumi.runtime.MockCallArgs, newerImages: boolean): Record<string, unknown> {
    switch (args.token) {
        case "oci:Identity/getAvailabilityDomains:getAvailabilityDomains":
            return { availabilityDomains: [{ id: "lab-ad-1", name: "Lab:AD-1", compartmentId: args.inputs.compartmentId }] };
        case "oci:Core/getImages:getImages": {
            const images = [{ id: "ocid1.image.oc1..labubuntu", displayName: "Canonical-Ubuntu-24.04-aarch64-2026.10.01-0", operatingSystem: "Canonical Ubuntu", operatingSystemVersion: "24.04" }];
            // Sorted newest first, as the program asks.
            if (newerImages) images.unshift({ id: "ocid1.image.oc1..labubuntunewer", displayName: "Canonical-Ubuntu-24.04-aarch64-2026.11.15-0", operatingSystem: "Canonical Ubuntu", operatingSystemVersion: "24.04" });
            return { images };
        }
        case "ovh:CloudProject/getImages:getImages":
            return { images: [{ id: newerImages ? "lab-image-ubuntu-newer" : "lab-image-ubuntu", name: "Ubuntu 24.04", region: args.inputs.region }] };
        case "ovh:CloudProject/getFlavors:getFlavors":
            return { flavors: [{ id: "lab-flavor-d2-2", name: "d2-2", region: args.inputs.region, vcpus: 1, ram: 2048 }] };
        default:
            throw new Error(`lab engine: invoke ${args.token} is not mocked`);
    }
}
