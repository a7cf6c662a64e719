// Log Analytics workspace, a workspace-based Application Insights (the worker's traces and metrics) and the
// Container Apps environment that ships its logs there. Application Insights takes Entra ID only
// (DisableLocalAuth): its connection string is then not a credential, and the worker's exporters sign in with the
// worker's managed identity, which holds Monitoring Metrics Publisher on it.

@description('Location of the resources.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Log Analytics workspace name.')
param workspaceName string

@description('Container Apps environment name.')
param environmentName string

@description('Application Insights name (workspace-based: its data lives in the workspace above).')
param appInsightsName string

@description('Principal id of the worker identity: it publishes traces and metrics to Application Insights.')
param publisherPrincipalId string

@minValue(30)
@description('Log retention in days.')
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    RetentionInDays: retentionInDays
    // Ingestion by Entra ID only: the instrumentation key in the connection string no longer lets anyone send.
    DisableLocalAuth: true
  }
}

// Monitoring Metrics Publisher, https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
// (Monitor): what Application Insights asks of an Entra ID token that sends telemetry.
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'

resource publisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, publisherPrincipalId, monitoringMetricsPublisherRoleId)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    principalId: publisherPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource environment 'Microsoft.App/managedEnvironments@2025-01-01' = {
  name: environmentName
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: workspace.properties.customerId
        sharedKey: workspace.listKeys().primarySharedKey
      }
    }
  }
}

output environmentId string = environment.id
// An app's ingress name is <app name>.<this>: the dashboard answers only to its own (--allowed-host).
output environmentDefaultDomain string = environment.properties.defaultDomain
// The name only: the container app reads the connection string itself, so no output carries it.
output appInsightsName string = appInsights.name
